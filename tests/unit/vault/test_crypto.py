import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.vault import crypto


@given(text=st.text(max_size=500))
def test_seal_then_open_gives_the_text_back(text: str) -> None:
    key = crypto.new_data_key()
    sealed = crypto.seal_with(key, "subject-1", "accounts.users.name", text)
    assert crypto.open_with(key, "subject-1", "accounts.users.name", sealed) == text


def test_sealed_text_does_not_contain_the_plaintext() -> None:
    key = crypto.new_data_key()
    sealed = crypto.seal_with(key, "s", "p", "jane@example.com")
    assert b"jane" not in sealed


@pytest.mark.parametrize(("subject", "purpose"), [("s2", "p"), ("s", "other-column")])
def test_a_sealed_value_does_not_open_for_another_subject_or_column(
    subject: str, purpose: str
) -> None:
    key = crypto.new_data_key()
    sealed = crypto.seal_with(key, "s", "p", "secret")
    with pytest.raises(crypto.SealBroken):
        crypto.open_with(key, subject, purpose, sealed)


def test_a_wrong_key_or_garbage_is_refused_clearly() -> None:
    sealed = crypto.seal_with(crypto.new_data_key(), "s", "p", "secret")
    with pytest.raises(crypto.SealBroken):
        crypto.open_with(crypto.new_data_key(), "s", "p", sealed)
    with pytest.raises(crypto.SealBroken, match="format"):
        crypto.open_with(crypto.new_data_key(), "s", "p", b"plain text")


def test_wrapped_keys_unwrap_only_with_the_master_key_and_subject() -> None:
    master, data_key = crypto.new_data_key(), crypto.new_data_key()
    wrapped = crypto.wrap_key(master, "s", data_key)
    assert crypto.unwrap_key(master, "s", wrapped) == data_key
    with pytest.raises(crypto.SealBroken):
        crypto.unwrap_key(master, "another", wrapped)


def test_blind_index_matches_normalised_equal_values_only() -> None:
    key = b"k" * 32
    a = crypto.blind_index(key, "email", "Jane@Example.com ")
    assert a == crypto.blind_index(key, "email", "jane@example.com")
    assert a != crypto.blind_index(key, "email", "john@example.com")
    assert a != crypto.blind_index(key, "name", "jane@example.com")
    assert a != crypto.blind_index(b"x" * 32, "email", "jane@example.com")
