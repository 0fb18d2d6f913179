"""The console's reports over HTTP: who may read them (the API's rule, live from the
roles), every report's page with its chart, CSV downloads that hold the table's numbers,
and an audit row for every page and download, as the API's reads.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from html.parser import HTMLParser

import asyncpg
import httpx
import pytest
from conftest import fresh_database
from markupsafe import escape
from request_helpers import form
from staff_helpers import Browser, browser, staff_db
from test_staff_admin import signed_in

from app.services.monitoring import reports

__all__ = ["browser", "staff_db"]  # the fixtures


@pytest.fixture(scope="module")
def database_url() -> Iterator[str]:
    """A registry of its own: the reports count this module's requests alone."""
    with fresh_database() as url:
        yield url


class Tables(HTMLParser):
    """Every ``<table>`` of a page: its ``data-table`` (or id) and its rows of cell texts;
    ``codes`` has the same rows with each cell's ``data-code`` (the code a word stands for)."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.codes: dict[str, list[list[str | None]]] = {}
        self._table: list[list[str]] | None = None
        self._codes: list[list[str | None]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "table":
            name = found.get("data-table") or found.get("id") or str(len(self.tables))
            self._table = self.tables.setdefault(name, [])
            self._codes = self.codes.setdefault(name, [])
        elif tag == "tr" and self._table is not None:
            self._table.append([])
            self._codes.append([])
        elif tag in ("td", "th") and self._table is not None:
            self._cell = []
            self._codes[-1].append(found.get("data-code"))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._table is not None and self._cell is not None:
            self._table[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def tables_of(html: str) -> dict[str, list[list[str]]]:
    parser = Tables()
    parser.feed(html)
    return parser.tables


def codes_of(html: str) -> dict[str, list[list[str | None]]]:
    parser = Tables()
    parser.feed(html)
    return parser.codes


def plain(text: str) -> str:
    """A cell as the CSV writes it: no thousands separators, a dash is empty."""
    return "" if text == "—" else text.replace(",", "")


async def test_who_may_read_the_reports(database_url: str, browser: Browser) -> None:
    _, committee = await signed_in(database_url, browser, "committee")
    for path in ("/staff/reports", "/staff/reports/requests", "/staff/reports/revenue/csv"):
        refused = await committee.get(path)
        assert refused.status_code == 403, path
        assert "Reports are read by officers" in refused.text
    home = await committee.get("/staff/")
    assert 'href="/staff/reports' not in home.text  # no link to what the roles cannot open
    for role in ("officer", "secretary", "me", "admin"):
        _, client = await signed_in(database_url, browser, role)
        index = await client.get("/staff/reports?lang=ur")
        assert index.status_code == 200, role
        assert 'href="/staff/reports?lang=ur" aria-current="page"' in index.text
        for name in reports.REPORTS:
            assert f'href="/staff/reports/{name}?lang=ur"' in index.text


async def test_every_report_has_a_chart_and_csv_with_the_tables_numbers(
    database_url: str, browser: Browser, staff_db: asyncpg.Connection
) -> None:
    public = browser("198.51.100.7")
    for kind in ("government", "academic", "government"):
        body = form(organization={**form()["organization"], "type": kind})
        made = await public.post("/v1/requests", json=body)
        assert made.status_code == 201, made.text
    member, client = await signed_in(database_url, browser, "me")
    for name in reports.REPORTS:
        shown = await client.get(f"/staff/reports/{name}")
        assert shown.status_code == 200, (name, shown.text[:300])
        assert '<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img"' in shown.text
        found, codes = tables_of(shown.text), codes_of(shown.text)
        for table in reports.TABLES[name]:
            downloaded = await client.get(f"/staff/reports/{name}/csv", params={"table": table})
            assert downloaded.status_code == 200
            assert downloaded.headers["content-type"] == "text/csv; charset=utf-8"
            assert downloaded.headers["content-disposition"] == (
                f'attachment; filename="nser-{name}-{table}-all.csv"'
            )
            lines = list(csv.reader(io.StringIO(downloaded.text)))
            assert lines[0] == list(reports.COLUMNS[(name, table)])
            shown_rows = [[plain(c) for c in row] for row in found[table][1:]]
            if not lines[1:]:
                assert shown_rows == [["Nothing to show in this range."]]
                continue
            # Booleans and times are written for people on the page, codes as words (the
            # cell keeps its code in data-code); compare the rest.
            for got, got_codes, want in zip(shown_rows, codes[table][1:], lines[1:], strict=True):
                for column, page_cell, code, csv_cell in zip(
                    reports.COLUMNS[(name, table)], got, got_codes, want, strict=True
                ):
                    if column in ("dry_run", "filed_at", "due_at"):
                        continue
                    if code is not None:
                        assert (code, page_cell != code) == (csv_cell, True), (name, column)
                    elif csv_cell and csv_cell.replace(".", "", 1).isdigit() and "." in csv_cell:
                        assert float(page_cell) == pytest.approx(float(csv_cell), abs=0.01)
                    else:
                        assert page_cell == csv_cell, (name, table, column)

    # The requests made above are on the page and in its CSV, per organization type.
    page = await client.get("/staff/reports/requests")
    chart = tables_of(page.text)["chart-table"]
    assert ["Submitted", "3"] in chart[1:]
    rows = list(csv.DictReader(io.StringIO((await client.get("/staff/reports/requests/csv")).text)))
    by_type = {r["organization_type"]: r["requests"] for r in rows if r["status"] == "submitted"}
    assert by_type == {"government": "2", "academic": "1"}

    # Each page and download was audited as the API's read, with its format.
    audited = await staff_db.fetch(
        "SELECT filters FROM audit_log WHERE client_id = $1 AND endpoint = $2 ORDER BY id",
        member.staff_id,
        reports.ENDPOINT,
    )
    formats = [row["filters"] for row in audited]
    assert len(formats) == len(reports.REPORTS) + sum(map(len, reports.TABLES.values())) + 2
    assert '"format": "csv"' in formats[1]
    assert '"format": "json"' in formats[0]


async def test_cells_and_bars_show_words_and_the_csv_keeps_codes(
    database_url: str, browser: Browser
) -> None:
    """Codes (a request's state, an organization's type, a category, a grievance's reason)
    are words in the page's language; the CSV of the same table has the codes."""
    public = browser("198.51.100.8")
    made = await public.post("/v1/requests", json=form())
    assert made.status_code == 201, made.text
    _, client = await signed_in(database_url, browser, "officer")
    words = {
        "en": ("Submitted", "Government", "Not reviewed yet", "The household's assets are wrong"),
        "ur": ("جمع کرائی گئی", "سرکاری", "ابھی جائزہ نہیں لیا گیا", "گھرانے کے اثاثے غلط درج ہیں"),
    }
    for lang, (state, kind, category, reason) in words.items():
        page = await client.get("/staff/reports/requests", params={"lang": lang})
        assert page.status_code == 200
        rows = tables_of(page.text)["rows"]
        assert [state, kind, category] in [row[:3] for row in rows[1:]], rows
        chart = tables_of(page.text)["chart-table"]
        assert state in {row[0] for row in chart[1:]}
        assert f'class="chart-label">{state}</text>' in page.text  # the bar's label
        stages = {row[0] for row in tables_of(page.text)["stages"][1:]}
        assert state in stages
        assert "submitted" not in stages
        assert "under_review" not in stages

        grievances = await client.get("/staff/reports/grievances", params={"lang": lang})
        by_reason = {row[0] for row in tables_of(grievances.text)["rows"][1:]}
        assert reason in by_reason
        assert "wrong_assets" not in by_reason
        assert f'class="chart-label">{escape(reason)}</text>' in grievances.text

    # The CSVs, downloaded after the Urdu pages (the language is remembered), have codes.
    async def csv_rows(name: str, table: str = "rows") -> list[dict[str, str]]:
        got = await client.get(f"/staff/reports/{name}/csv", params={"table": table})
        assert got.status_code == 200
        return list(csv.DictReader(io.StringIO(got.text)))

    requests_rows = await csv_rows("requests")
    assert ("submitted", "government", "unreviewed") in {
        (row["status"], row["organization_type"], row["category"]) for row in requests_rows
    }
    assert "under_review" in {row["stage"] for row in await csv_rows("requests", "stages")}
    assert "wrong_assets" in {row["reason"] for row in await csv_rows("grievances")}


async def test_a_range_is_checked_and_kept(database_url: str, browser: Browser) -> None:
    _, client = await signed_in(database_url, browser, "officer")
    wrong = await client.get("/staff/reports/grievances?from=2026-05-02&to=2026-05-01")
    assert wrong.status_code == 422
    assert "The first day must be on or before the last day." in wrong.text
    bad = await client.get("/staff/reports/grievances?from=tomorrow")
    assert bad.status_code == 422
    assert "Enter a date as YYYY-MM-DD" in bad.text
    ranged = await client.get("/staff/reports/grievances?from=2026-01-01&to=2026-01-31")
    assert ranged.status_code == 200
    assert "table=rows&amp;from=2026-01-01&amp;to=2026-01-31" in ranged.text
    got = await client.get(
        "/staff/reports/grievances/csv", params={"from": "2026-01-01", "to": "2026-01-31"}
    )
    assert 'filename="nser-grievances-rows-2026-01-01-2026-01-31.csv"' in str(got.headers)
    assert (await client.get("/staff/reports/nothing")).status_code == 422
    assert (await client.get("/staff/reports/requests/csv?table=overdue")).status_code == 422


async def test_signed_out_goes_to_sign_in(browser: Browser) -> None:
    client: httpx.AsyncClient = browser()
    answer = await client.get("/staff/reports/revenue")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/staff/sign-in?next=%2Fstaff%2Freports")
