"""Programmes (issue 12): who runs them, their eligibility rules, and who is eligible.

Owns programmes (an owner organization, a code, a name, active or closed), their
rules — data, versioned like the PMT model, validated before they are stored and compiled
to SQL, never evaluated household by household in Python — which agreements name which
programme, eligibility by CNIC, and the eligible list, which is the beneficiary list with
the rule applied (a ``Restriction`` of ``app.services.sharing.beneficiaries_sql``), not a
second list.

Public: ``rules`` (``parse_rule``, ``normalize``, ``eligible_sql``, ``clause_sql``,
``cut_off_sql``, ``compile_where``, ``Rule``, ``RuleError``, ``CONDITIONS``), ``store``
(``create``, ``add_version``, ``get``, ``for_partner``, ``list_for_partner``,
``list_all``, ``staff_view``, ``name_in_agreement``), ``eligibility`` (``check``,
``restriction``), ``status`` (``close``, ``reopen``, ``ensure_open``, ``ensure_open_at``:
a closed programme's eligibility and list are refused from its closing on),
``demo.ensure_demo_programmes``.
"""
