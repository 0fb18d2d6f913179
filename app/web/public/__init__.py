"""The public website: one package per page, each holding everything that page is.

::

    public/<page>/routes.py      the page's HTTP handlers (an APIRouter of WebRoute)
    public/<page>/page.py        its pure parts, when it has any: form mapping, labels,
                                 table rows, SVG (no request, no database)
    public/<page>/templates/     its Jinja2 templates, named "<page>/<file>.html"
    public/routes.py             every page's router, in the order the app includes them
    public/challenge.py          the forms' abuse control: free sends, then proof of work

The pages call the same services the API calls (the website adds no second back end).
What all pages share stays in :mod:`app.web`: the layout and error templates, rendering,
languages and catalogues, security headers and CSRF, ``WebRoute`` and the static files.
"""
