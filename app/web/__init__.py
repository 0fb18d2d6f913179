"""The public website: server-rendered pages in English and Urdu.

Owns the templates (``templates/``), the static assets (``static/``: stylesheet, the small
enhancement scripts, the Noto Nastaliq Urdu font and its OFL licence), the gettext
catalogues (``translations/<lang>/LC_MESSAGES/<page>.po``, compiled to ``.mo`` at build or
install time) and the rendering helpers every page shares:

- :mod:`app.web.i18n` — which language a request gets (``?lang=``, the ``nser_lang``
  cookie, ``Accept-Language``), its catalogue, and Babel's numbers and dates for it;
- :mod:`app.web.render` — the Jinja2 environments (one per language) and ``page()``;
- :mod:`app.web.security` — security headers, the Content-Security-Policy and CSRF tokens.

The pages' routers live beside the API's in ``app/routers/web*.py``; they call the same
services the API calls, so the website adds no second back end.
"""
