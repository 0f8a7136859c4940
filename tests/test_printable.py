"""The printable rule: Python's fast check never disagrees with the current Unicode database."""

import sys
import unicodedata

import unicodedata2

from tally.printable import UNICODE_VERSION, printable, printable_char


def test_the_database_is_newer_than_pythons_own():
    version = tuple(int(part) for part in UNICODE_VERSION.split("."))
    assert version >= (18, 0, 0)
    assert version > tuple(int(part) for part in unicodedata.unidata_version.split("."))
    assert unicodedata2.unidata_version == UNICODE_VERSION


def test_every_code_point_is_judged_by_the_current_database():
    """`printable` trusts str.isprintable when it says yes: that must never be wrong."""
    wrong = [hex(c) for c in range(sys.maxunicode + 1)
             if printable(chr(c)) != printable_char(chr(c))]
    assert wrong == []


def test_printable_text():
    assert printable("shaking face \U0001FAE8 é 🎬 {a}:b/c")  # U+1FAE8 is Unicode 15
    assert not "\U0001FAE8".isprintable()  # what the check was before: Python's Unicode 14
    for bad in ["a\nb", "\x7f", "\u00ad", "\u0378", "\u2028", "\U000E0001", "\ud800", "a\u00a0"]:
        assert not printable(bad), repr(bad)


def test_the_influxdb_sink_takes_every_key_the_api_accepts():
    """One rule: a key counted by the API with a new emoji is written to InfluxDB too."""
    from tally.ingest.flusher.lineprotocol import representable

    assert representable("shaking face \U0001FAE8")
    assert not representable("a\u0378")
