"""``/check``: the public look-up as a form, and its proof-of-work challenge."""
