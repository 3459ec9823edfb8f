"""Every CHECK and UNIQUE constraint refuses what it should (and accepts the valid row)."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

BASE_ROWS = """
INSERT INTO trunks (id, name, cps, max_channels) OVERRIDING SYSTEM VALUE VALUES (1, 'MC', 10, 20);
INSERT INTO trunk_routes (trunk_id, pbx) VALUES (1, 'default');
INSERT INTO campaigns (id, name, trunk_id, caller_id_number, ivr_file)
    OVERRIDING SYSTEM VALUE VALUES (1, 'spring', 1, '+12125550100', 'welcome');
INSERT INTO contact_imports (id, campaign_id, filename, checksum)
    OVERRIDING SYSTEM VALUE VALUES (1, 1, 'list.csv', 'abc');
INSERT INTO contacts (id, campaign_id, phone_e164, phone_raw)
    OVERRIDING SYSTEM VALUE VALUES (1, 1, '+12125550101', '212-555-0101');
INSERT INTO call_attempts (id, custom_call_id, campaign_id, contact_id, trunk_id, attempt_number)
    OVERRIDING SYSTEM VALUE VALUES (1, '1704067200000_1', 1, 1, 1, 1);
INSERT INTO dnc_numbers (phone_e164) VALUES ('+12125550199');
SELECT setval(pg_get_serial_sequence(t, 'id'), 100)
    FROM unnest(ARRAY['trunks', 'campaigns', 'contact_imports', 'contacts', 'call_attempts']) AS t;
"""

# (statement, constraint that must refuse it)
REFUSED = [
    ("UPDATE trunks SET cps = 0", "ck_trunks_cps_positive"),
    ("UPDATE trunks SET cps = -5", "ck_trunks_cps_positive"),
    ("UPDATE trunks SET max_channels = 0", "ck_trunks_max_channels_positive"),
    (
        "UPDATE trunk_routes SET channel_template = 'PJSIP/123@MC'",
        "ck_trunk_routes_template_has_number",
    ),
    ("UPDATE trunks SET name = 'bad name'", "ck_trunks_name_safe"),
    ("INSERT INTO trunks (name, cps, max_channels) VALUES ('MC', 1, 1)", "uq_trunks_name"),
    ("INSERT INTO trunk_routes (trunk_id, pbx) VALUES (1, 'default')", "pk_trunk_routes"),
    ("INSERT INTO trunk_routes (trunk_id, pbx) VALUES (1, 'east')", "fk_trunk_routes_pbx_pbxs"),
    ("INSERT INTO pbxs (name) VALUES ('default')", "pk_pbxs"),
    ("INSERT INTO pbxs (name) VALUES ('East')", "ck_pbxs_name_format"),
    ("INSERT INTO pbxs (name) VALUES ('1east')", "ck_pbxs_name_format"),
    ("INSERT INTO pbxs (name) VALUES ('" + "e" * 32 + "')", "ck_pbxs_name_format"),
    ("UPDATE pbxs SET max_cps = 0", "ck_pbxs_max_cps_positive"),
    ("UPDATE pbxs SET max_channels = 0", "ck_pbxs_max_channels_positive"),
    ("UPDATE pbxs SET latency_threshold_ms = 0", "ck_pbxs_latency_threshold_positive"),
    ("UPDATE pbxs SET rate = 0", "ck_pbxs_rate_positive"),
    ("UPDATE pbxs SET state = 'sleeping'", "ck_pbxs_state_known"),
    ("UPDATE call_attempts SET pbx = 'east'", "fk_call_attempts_pbx_pbxs"),
    ("UPDATE campaigns SET status = 'dialing'", "ck_campaigns_status_known"),
    ("UPDATE campaigns SET press_key = '12'", "ck_campaigns_press_key_dtmf"),
    ("UPDATE campaigns SET press_key = 'a'", "ck_campaigns_press_key_dtmf"),
    ("UPDATE campaigns SET opt_out_key = 'x'", "ck_campaigns_opt_out_key_dtmf"),
    ("UPDATE campaigns SET opt_out_key = '1'", "ck_campaigns_opt_out_key_dtmf"),
    ("UPDATE campaigns SET max_attempts = 0", "ck_campaigns_max_attempts_positive"),
    ("UPDATE campaigns SET originate_timeout_ms = 0", "ck_campaigns_timeout_positive"),
    ("UPDATE campaigns SET priority = 0", "ck_campaigns_priority_positive"),
    ("UPDATE campaigns SET calling_days = '{}'", "ck_campaigns_calling_days_iso"),
    ("UPDATE campaigns SET calling_days = '{0,1}'", "ck_campaigns_calling_days_iso"),
    ("UPDATE campaigns SET calling_hours_start = '21:00'", "ck_campaigns_calling_hours_order"),
    (
        "UPDATE campaigns SET start_at = '2026-01-02Z', end_at = '2026-01-01Z'",
        "ck_campaigns_end_after_start",
    ),
    ("UPDATE campaigns SET retry_delays = '[]'", "ck_campaigns_retry_delays_object"),
    ("UPDATE campaigns SET region = 'usa'", "ck_campaigns_region_iso"),
    (
        "INSERT INTO campaigns (name, trunk_id, caller_id_number, ivr_file)"
        " VALUES ('spring', 1, '+12125550100', 'x')",
        "uq_campaigns_name",
    ),
    ("UPDATE contact_imports SET status = 'half'", "ck_contact_imports_status_known"),
    ("UPDATE contact_imports SET rejected = -1", "ck_contact_imports_counts_not_negative"),
    (
        "INSERT INTO import_rejects (import_id, line_number, raw, reason) VALUES (1, 0, '', 'x')",
        "ck_import_rejects_line_number_positive",
    ),
    ("UPDATE contacts SET attempts = -1", "ck_contacts_attempts_not_negative"),
    ("UPDATE contacts SET status = 'maybe'", "ck_contacts_status_known"),
    ("UPDATE contacts SET phone_e164 = '2125550101'", "ck_contacts_phone_e164_format"),
    (
        "INSERT INTO contacts (campaign_id, phone_e164, phone_raw) VALUES (1, '+12125550101', 'x')",
        "uq_contacts_campaign_id_phone_e164",
    ),
    ("UPDATE call_attempts SET attempt_number = 0", "ck_call_attempts_attempt_number_positive"),
    ("UPDATE call_attempts SET status = 'ringing'", "ck_call_attempts_status_known"),
    ("UPDATE call_attempts SET custom_call_id = 'abc'", "ck_call_attempts_custom_call_id_shape"),
    ("UPDATE call_attempts SET dtmf = '1a'", "ck_call_attempts_dtmf_digits"),
    ("UPDATE call_attempts SET status = 'ended'", "ck_call_attempts_ended_has_outcome"),
    (
        "INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id, attempt_number)"
        " VALUES ('1704067200000_1', 1, 1, 1, 2)",
        "uq_call_attempts_custom_call_id",
    ),
    (
        "INSERT INTO call_attempts (custom_call_id, campaign_id, contact_id, trunk_id, attempt_number)"
        " VALUES ('1704067200000_2', 1, 1, 1, 1)",
        "uq_call_attempts_contact_id_attempt_number",
    ),
    (
        "INSERT INTO call_events (call_attempt_id, event, fingerprint, data) VALUES"
        " (1, 'Hangup', 'f', '{}'), (1, 'Hangup', 'f', '{}')",
        "uq_call_events_call_attempt_id_fingerprint",
    ),
    (
        "INSERT INTO dnc_numbers (phone_e164) VALUES ('+12125550199')",
        "uq_dnc_numbers_phone_e164_campaign_id",
    ),
    ("INSERT INTO dnc_numbers (phone_e164) VALUES ('12345')", "ck_dnc_numbers_phone_e164_format"),
]

ACCEPTED = [
    "UPDATE campaigns SET press_key = '#', opt_out_key = '*'",
    "UPDATE campaigns SET opt_out_key = NULL",
    "UPDATE call_attempts SET status = 'ended', outcome = 'busy', ended_at = now()",
    "INSERT INTO dnc_numbers (phone_e164, campaign_id) VALUES ('+12125550199', 1)",
    "UPDATE call_attempts SET dtmf = '1#'",
    "INSERT INTO pbxs (name) VALUES ('east-1_b'), ('" + "e" * 31 + "')",
    "UPDATE pbxs SET rate = 0.5, state = 'shutting_down'",
]


@pytest.fixture
def conn(engine) -> Connection:
    with engine.connect() as connection:
        connection.exec_driver_sql(BASE_ROWS)
        connection.commit()
        yield connection


@pytest.mark.parametrize(("statement", "constraint"), REFUSED)
def test_constraint_refuses(conn: Connection, statement: str, constraint: str) -> None:
    with pytest.raises(IntegrityError) as info:
        conn.execute(text(statement))
    conn.rollback()
    assert info.value.orig.diag.constraint_name == constraint


@pytest.mark.parametrize("statement", ACCEPTED)
def test_valid_rows_accepted(conn: Connection, statement: str) -> None:
    conn.execute(text(statement))
    conn.rollback()


# -- call_events follow their attempts (migration 0006: triggers, no foreign key) ---------------

EVENTS = (
    "INSERT INTO call_attempts (id, custom_call_id, campaign_id, contact_id, trunk_id,"
    " attempt_number) OVERRIDING SYSTEM VALUE VALUES (101, '1704067200000_101', 1, 1, 1, 2);"
    "INSERT INTO call_events (call_attempt_id, event, fingerprint, data) VALUES"
    " (1, 'Hangup', 'a', '{}'), (1, 'DialEnd', 'b', '{}'), (101, 'Hangup', 'c', '{}')"
)


def _events(conn: Connection) -> list[tuple[int, str]]:
    rows = conn.execute(text("SELECT call_attempt_id, fingerprint FROM call_events ORDER BY 2"))
    return [tuple(r) for r in rows]


@pytest.mark.parametrize(
    ("statement", "left"),
    [
        ("DELETE FROM call_attempts WHERE id = 1", [(101, "c")]),
        ("DELETE FROM campaigns WHERE id = 1", []),  # attempts go by cascade, events follow
        ("DELETE FROM contacts WHERE id = 1", []),
        ("TRUNCATE call_attempts", []),
        ("UPDATE call_attempts SET status = 'up' WHERE id = 1", [(1, "a"), (1, "b"), (101, "c")]),
    ],
)
def test_events_follow_their_attempts(
    conn: Connection, statement: str, left: list[tuple[int, str]]
) -> None:
    conn.exec_driver_sql(EVENTS)
    assert len(_events(conn)) == 3
    conn.exec_driver_sql(statement)
    assert _events(conn) == left
    conn.rollback()
