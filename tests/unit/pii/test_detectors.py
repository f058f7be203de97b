import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.pii import (
    PiiKind,
    find_emails,
    find_ipv4,
    find_ipv6,
    find_phone_numbers,
    find_pii,
    find_tokens,
)
from shared.pii.findings import Finding

from .strategies import DIGITS, emails, phones

JWT = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"


def spans(text: str, findings: list[Finding]) -> list[str]:
    return [text[f.start : f.end] for f in findings]


@pytest.mark.promise("P-04")
@pytest.mark.parametrize(
    "email",
    [
        "jane@example.com",
        "jane.doe+repairs@mail.example.co.uk",
        "JANE_DOE@Example.COM",
        "j-d@sub-domain.example.io",
        "jane%40example.com",
        "josé@exämple.de",
        "x@example.xn--p1ai",
        # An apostrophe is atext (RFC 5322): inside the local part, it is part of it.
        "o'brien@example.com",
        "mary.o'brien+work@example.ie",
    ],
)
def test_emails_are_found_whole(email: str) -> None:
    text = f"contact: {email}, thanks"
    assert spans(text, find_emails(text)) == [email]


@pytest.mark.promise("P-04")
@pytest.mark.parametrize(
    ("text", "email"),
    [
        ("'jane@example.com'", "jane@example.com"),
        ("{'to': 'o'brien@example.com'}", "o'brien@example.com"),
        ("it's jane@example.com", "jane@example.com"),
    ],
)
def test_a_quote_around_an_address_is_not_part_of_it(text: str, email: str) -> None:
    assert spans(text, find_emails(text)) == [email]


@pytest.mark.parametrize(
    "text", ["@example.com", "jane@", "a@b.c", "ping @handle", "build@1.2.3", "foo@bar"]
)
def test_things_that_are_not_emails(text: str) -> None:
    assert find_emails(text) == []


@pytest.mark.promise("P-04")
@given(emails())
def test_generated_emails_are_found_whole(email: str) -> None:
    text = f"from {email} today"
    assert spans(text, find_emails(text)) == [email]


@pytest.mark.promise("P-04")
@pytest.mark.parametrize(
    "phone",
    [
        "+14155552671",
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "415 555 2671",
        "+44 20 7946 0958",
        "+33 1 23 45 67 89",
        "+1 (415) 555-2671",
        "+49 30 123456",
        "1-800-555-0199",
        # National numbers with their trunk 0, and the 00 international prefix.
        "07700 900123",
        "06 12 34 56 78",
        "06.12.34.56.78",
        "030 12345678",
        "030/12345678",
        "0044 20 7946 0958",
        "+49 30/1234567",
        # A trunk prefix in brackets, as British numbers are written.
        "(020) 7183 8750",
        "(0161) 496 0000",
        "(01632)960123",
        # A slash between a North American area code and the number.
        "415/555-2671",
        "1 415/555-2671",
        # Digits of other scripts read as digits.
        "+\uff11 \uff12\uff11\uff12 \uff15\uff15\uff15 \uff10\uff11\uff12\uff13",
        "(\uff12\uff11\uff12) \uff15\uff15\uff15-\uff10\uff11\uff12\uff13",
        "+\u0661 \u0664\u0661\u0665 \u0665\u0665\u0665 \u0662\u0666\u0667\u0661",
    ],
)
def test_phone_numbers_are_found_whole(phone: str) -> None:
    text = f"call {phone} now"
    assert spans(text, find_phone_numbers(text)) == [phone]
    assert [f.kind for f in find_pii(text)] == [PiiKind.PHONE]


@pytest.mark.promise("P-04")
@pytest.mark.parametrize(
    "phone",
    [
        # French typography spaces groups with the narrow no-break space, others with the
        # thin or the no-break one; autocorrect turns "-" into a non-breaking hyphen or an
        # en dash. A reader sees the same number as with ASCII separators.
        "+33\u202f6\u202f12\u202f34\u202f56\u202f78",
        "+33\u20096\u200912\u200934\u200956\u200978",
        "06\u202f12\u202f34\u202f56\u202f78",
        "+44\u202f20\u202f7183\u202f8750",
        "+1\u2011415\u2011555\u20112671",
        "415\u2011555\u20112671",
        "415\u2013555\u20132671",
        "(415)\u00a0555\u20112671",
        "1\u2010800\u2010555\u20100199",
        "030\u200712345678",
        "03\u30fc1234\u30fc5678",  # Japanese input's long-vowel mark, typed as a dash
        # Invisible characters split the groups without a reader seeing them.
        "+33\u200b6\u200b12\u200b34\u200b56\u200b78",
        "415\u00ad555\u00ad2671",
    ],
)
def test_phone_numbers_with_unicode_spaces_and_dashes_are_found_whole(phone: str) -> None:
    text = f"call {phone} now"
    assert spans(text, find_phone_numbers(text)) == [phone]
    assert [f.kind for f in find_pii(text)] == [PiiKind.PHONE]


@pytest.mark.parametrize(
    "text",
    [
        "due 2026\u201311\u201329",
        "due 01\u201302\u20132024",
        "on 01.02.2024\u202f10",
        "ISBN 978\u20113\u201116\u2011148410\u20110",
        "ranges 10\u201320\u201330",
        "order\u00a00012345678",
        "price 0.99\u20090.49",
        # A line break separates lines, not a number's groups: without a Luhn check, as a
        # card has, numbers on consecutive lines would be joined into phones.
        "415\u2028555\u20282671",
    ],
)
def test_unicode_separators_make_no_phone_of_what_ascii_ones_do_not(text: str) -> None:
    assert find_pii(text) == []


@pytest.mark.promise("P-04")
@given(phones())
def test_generated_phone_numbers_are_found_whole(phone: str) -> None:
    text = f"tel. {phone} please"
    assert spans(text, find_pii(text)) == [phone]


@pytest.mark.parametrize(
    "text",
    [
        "due 2026-11-29",
        "at 2026-11-29T12:30:45Z",
        "at 12:30:45",
        "version 1.2.3",
        "build 10.0.19045",
        "price 19.99",
        "total $1,299.00",
        "order 1234567",
        "order 12345678901",
        "qty 3",
        "ISBN 978-3-16-148410-0",
        "ISBN 0-306-40615-2",
        "unix 1764400000",
        "stamp 20261129123045",
        "ranges 10-20-30",
        "UTC+01:00",
        "due 01.02.2024 10:30",
        "on 01/02/2024 10",
        "order 0012345678",
        "id 00123",
        "price 0.99 0.49",
        "see (01) 2024",
        "step (02) 12 of 30",
        "ratio 415/555/2671",
        "pages 415/123-4567",
        "it's o'clock",
    ],
)
def test_dates_versions_prices_and_ids_are_not_personal_data(text: str) -> None:
    assert find_pii(text) == []


@given(st.text(DIGITS, min_size=16, max_size=30))
def test_more_than_fifteen_digits_are_never_a_phone(digits: str) -> None:
    # E.164 allows at most 15 digits; longer runs are cards or ids.
    assert find_phone_numbers(f"x +{digits} y") == []
    assert find_phone_numbers(f"x {digits} y") == []


@pytest.mark.parametrize(
    ("text", "phone"),
    [("tel+442071838750", "+442071838750"), ("call+1 415 555 2671", "+1 415 555 2671")],
)
def test_an_international_number_glued_to_letters_is_found(text: str, phone: str) -> None:
    assert spans(text, find_phone_numbers(text)) == [phone]


def test_a_phone_followed_by_more_digit_groups_is_still_found() -> None:
    # Separated groups may belong to the number, so it takes as many as fit in 15 digits.
    text = "+1 415 555 2671 1234 5678 9999"
    assert spans(text, find_phone_numbers(text)) == ["+1 415 555 2671 1234"]
    text = "+14155552671 1234 5678 9999"
    assert spans(text, find_phone_numbers(text)) == ["+14155552671"]


@pytest.mark.promise("P-04")
@pytest.mark.parametrize("ip", ["192.168.0.1", "10.0.0.255", "8.8.8.8", "255.255.255.255"])
def test_ipv4_addresses_are_found(ip: str) -> None:
    text = f"from {ip}."
    assert spans(text, find_ipv4(text)) == [ip]


@pytest.mark.parametrize(
    "text", ["256.1.1.1", "1.2.3", "1.2.3.4.5", "192.168.1.300", "999.999.999.999"]
)
def test_invalid_or_longer_dotted_numbers_are_not_ipv4(text: str) -> None:
    assert find_ipv4(text) == []


@pytest.mark.promise("P-04")
@pytest.mark.parametrize(
    "ip",
    [
        "2001:db8::1",
        "::1",
        "fe80::1ff:fe23:4567:890a",
        "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
        "::ffff:192.0.2.128",
        "1::",
    ],
)
def test_ipv6_addresses_are_found_in_any_form(ip: str) -> None:
    text = f"peer [{ip}]:8080 and {ip}."
    assert spans(text, find_ipv6(text)) == [ip, ip]


@pytest.mark.promise("P-04")
@pytest.mark.parametrize("ip", ["2001:db8::1", "::ffff:192.0.2.128", "fe80::1ff:fe23:4567:890a"])
def test_an_ipv6_address_with_a_port_and_no_brackets_is_found(ip: str) -> None:
    """As a server logs its client ("host:port"): a port of five digits is no hex group,
    and the whole was no address."""
    text = f"{ip}:54321 - POST /beacon"
    assert spans(text, find_ipv6(text)) == [ip]


@pytest.mark.parametrize(
    "text", ["std::vector", "12:30:45", "00:1A:2B:3C:4D:5E", "a :: b", "1::2::3", "ab:cd"]
)
def test_scopes_times_and_mac_addresses_are_not_ipv6(text: str) -> None:
    assert find_ipv6(text) == []


@pytest.mark.promise("P-04")
@given(st.ip_addresses().map(str).filter(lambda ip: ip != "::"))
def test_any_ip_address_is_found(ip: str) -> None:
    text = f"client {ip} connected"
    assert spans(text, find_pii(text)) == [ip]


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ("jwt " + JWT, JWT),
        ("Authorization: Bearer abc123.def-456", "abc123.def-456"),
        ("authorization: bearer 0a1b2c3d", "0a1b2c3d"),
        ("Authorization: Basic amFuZTpodW50ZXIy", "amFuZTpodW50ZXIy"),
        ("sha256 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", None),
        ("key Xk9pQ2vR7tLm4Ns8Wb3Yc6Hd1Fj5Gz0A", "Xk9pQ2vR7tLm4Ns8Wb3Yc6Hd1Fj5Gz0A"),
        ("key q8z3w-lr9tp_x2vbn7mk4cyh6jd1fs0g", "q8z3w-lr9tp_x2vbn7mk4cyh6jd1fs0g"),
        ("b64 dGhpcyBpcyBhIHNlY3JldCB2YWx1ZQ+/xy12==", "dGhpcyBpcyBhIHNlY3JldCB2YWx1ZQ+/xy12=="),
    ],
)
def test_secrets_are_tokens(text: str, token: str | None) -> None:
    expected = token or text.split()[-1]
    assert spans(text, find_pii(text)) == [expected]
    assert [f.kind for f in find_pii(text)] == [PiiKind.TOKEN]


@pytest.mark.parametrize(
    "text",
    [
        "/repairs/replace-the-battery-of-a-samsung-galaxy-s23-ultra",
        "class ThisIsAVeryLongCamelCaseIdentifier42",
        "/products/apple/iphone-15-pro-max/screen-repair",
        "SELECT_ALL_FROM_CUSTOMERS_WHERE_ID_1",
        "the Bearer authentication scheme",
        "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    ],
)
def test_slugs_identifiers_and_prose_are_not_tokens(text: str) -> None:
    assert find_tokens(text) == []


@given(st.binary(min_size=16, max_size=64).map(bytes.hex))
def test_long_hex_strings_with_a_digit_are_tokens(hex_string: str) -> None:
    text = f"id={hex_string};"
    has_digit = any(char in DIGITS for char in hex_string)
    assert spans(text, find_tokens(text)) == ([hex_string] if has_digit else [])


@given(st.text(string.ascii_letters + " .,!?'", max_size=300))
def test_prose_without_digits_or_symbols_holds_no_personal_data(text: str) -> None:
    assert find_pii(text) == []
