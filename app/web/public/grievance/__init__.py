"""``/grievance``: a household member's grievance about the score, and its status page."""
