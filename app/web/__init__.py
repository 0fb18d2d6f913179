"""The website: server-rendered pages in English and Urdu.

The public website's pages are in :mod:`app.web.public`, one package per page (routes,
pure parts and templates together). What every page shares is here:

- :mod:`app.web.site` — ``WebRoute`` (a page's failures answered as pages), the error
  pages, the static mount and the paths that get the website's security headers;
- :mod:`app.web.render` — the Jinja2 environments (one per language) and ``page()``;
- :mod:`app.web.i18n` — which language a request gets (``?lang=``, the ``nser_lang``
  cookie, ``Accept-Language``), its catalogue, and Babel's numbers and dates for it;
- :mod:`app.web.security` — security headers, the Content-Security-Policy and CSRF tokens;
- :mod:`app.web.catalogues` — extracting, checking and compiling the catalogues;
- ``templates/`` (the layout ``base.html`` and ``error.html``), ``static/`` (stylesheet,
  the small enhancement scripts, the Noto Nastaliq Urdu font and its OFL licence) and
  ``translations/<lang>/LC_MESSAGES/<page>.po`` (compiled to ``.mo`` at build or install).

The pages call the same services the API calls, so the website adds no second back end.
"""
