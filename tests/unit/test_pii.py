"""PII masking of logged request texts: each kind is masked whole and named; ordinary numbers stay."""

import pytest

from transferkit.serve.pii import mask


@pytest.mark.parametrize("text,expected", [
    ("mail jane.doe+x@example.co.uk now", "mail [EMAIL] now"),
    ("身份证号 11010519491231002X 请核对", "身份证号 [ID] 请核对"),
    ("身份证 440305199001011234，电话 +86 139 1234 5678", "身份证 [ID]，电话 [PHONE]"),
    ("手机13812345678联系", "手机[PHONE]联系"),
    ("+8613912345678", "[PHONE]"),
    ("call +1 (415) 555-0132 today", "call [PHONE] today"),
    ("tel 010-6552 9988", "tel [PHONE]"),
    ("ssn 123-45-6789", "ssn [ID]"),
    ("card 4111 1111 1111 1111 ok", "card [CARD] ok"),
    # what is not personal data stays as it is
    ("The movie ran 120 minutes in 2019, rated 8.5", "The movie ran 120 minutes in 2019, rated 8.5"),
    ("released 2019-05-03 at 10:30, 1,200 fans paid 3.50", "released 2019-05-03 at 10:30, 1,200 fans paid 3.50"),
    ("票房 12.5 亿，2020年上映", "票房 12.5 亿，2020年上映"),
])
def test_mask(text, expected):
    assert mask(text) == expected


def test_service_logs_mask_every_text_inside_a_dialogue_record():
    from transferkit.serve.app import _masked

    rec = {"turns": ["mail me at a@b.com", "ok"], "messages": [{"role": "user", "content": "a@b.com"}], "n": 3}
    out = _masked(rec, lambda t: t.replace("a@b.com", "<EMAIL>"))
    assert out == {"turns": ["mail me at <EMAIL>", "ok"], "messages": [{"role": "user", "content": "<EMAIL>"}], "n": 3}
