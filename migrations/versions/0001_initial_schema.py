"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('trunks',
    sa.Column('id', sa.Integer(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('pbx', sa.Text(), server_default='default', nullable=False),
    sa.Column('channel_template', sa.Text(), server_default='PJSIP/{number}@{trunk}', nullable=False),
    sa.Column('cps', sa.Float(), nullable=False),
    sa.Column('max_channels', sa.Integer(), nullable=False),
    sa.Column('next_slot_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("name ~ '^[A-Za-z0-9_.-]+$'", name=op.f('ck_trunks_name_safe')),
    sa.CheckConstraint("position('{number}' in channel_template) > 0", name=op.f('ck_trunks_template_has_number')),
    sa.CheckConstraint('cps > 0', name=op.f('ck_trunks_cps_positive')),
    sa.CheckConstraint('max_channels > 0', name=op.f('ck_trunks_max_channels_positive')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_trunks')),
    sa.UniqueConstraint('name', name=op.f('uq_trunks_name'))
    )
    op.create_table('campaigns',
    sa.Column('id', sa.Integer(), sa.Identity(always=False), nullable=False),
    sa.Column('name', sa.Text(), nullable=False),
    sa.Column('trunk_id', sa.Integer(), nullable=False),
    sa.Column('status', sa.Text(), server_default='draft', nullable=False),
    sa.Column('caller_id_number', sa.Text(), nullable=False),
    sa.Column('caller_id_name', sa.Text(), nullable=True),
    sa.Column('context', sa.Text(), server_default='DynamicIVR', nullable=False),
    sa.Column('exten', sa.Text(), server_default='s', nullable=False),
    sa.Column('priority', sa.Integer(), server_default='1', nullable=False),
    sa.Column('originate_timeout_ms', sa.Integer(), server_default='30000', nullable=False),
    sa.Column('ivr_file', sa.Text(), nullable=False),
    sa.Column('ivr_vm_file', sa.Text(), server_default='', nullable=False),
    sa.Column('transfer_number', sa.Text(), server_default='', nullable=False),
    sa.Column('transfer_prefix', sa.Text(), server_default='', nullable=False),
    sa.Column('press_key', sa.Text(), server_default='1', nullable=False),
    sa.Column('wait_strategy', sa.Text(), server_default='random', nullable=False),
    sa.Column('amd_enabled', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('opt_out_key', sa.Text(), nullable=True),
    sa.Column('record_calls', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('max_attempts', sa.Integer(), server_default='3', nullable=False),
    sa.Column('retry_delays', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('calling_hours_start', sa.Time(), server_default='09:00', nullable=False),
    sa.Column('calling_hours_end', sa.Time(), server_default='20:00', nullable=False),
    sa.Column('calling_days', postgresql.ARRAY(sa.SmallInteger()), server_default='{1,2,3,4,5}', nullable=False),
    sa.Column('start_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('end_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('region', sa.Text(), server_default='US', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("calling_days <> '{}' AND calling_days <@ '{1,2,3,4,5,6,7}'", name=op.f('ck_campaigns_calling_days_iso')),
    sa.CheckConstraint("jsonb_typeof(retry_delays) = 'object'", name=op.f('ck_campaigns_retry_delays_object')),
    sa.CheckConstraint("opt_out_key IS NULL OR (opt_out_key ~ '^[0-9*#]$' AND opt_out_key <> press_key)", name=op.f('ck_campaigns_opt_out_key_dtmf')),
    sa.CheckConstraint("press_key ~ '^[0-9*#]$'", name=op.f('ck_campaigns_press_key_dtmf')),
    sa.CheckConstraint("region ~ '^[A-Z]{2}$'", name=op.f('ck_campaigns_region_iso')),
    sa.CheckConstraint("status IN ('draft', 'scheduled', 'running', 'paused', 'completed', 'cancelled')", name=op.f('ck_campaigns_status_known')),
    sa.CheckConstraint('calling_hours_start < calling_hours_end', name=op.f('ck_campaigns_calling_hours_order')),
    sa.CheckConstraint('end_at IS NULL OR start_at IS NULL OR end_at > start_at', name=op.f('ck_campaigns_end_after_start')),
    sa.CheckConstraint('max_attempts >= 1', name=op.f('ck_campaigns_max_attempts_positive')),
    sa.CheckConstraint('originate_timeout_ms > 0', name=op.f('ck_campaigns_timeout_positive')),
    sa.CheckConstraint('priority >= 1', name=op.f('ck_campaigns_priority_positive')),
    sa.ForeignKeyConstraint(['trunk_id'], ['trunks.id'], name=op.f('fk_campaigns_trunk_id_trunks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_campaigns')),
    sa.UniqueConstraint('name', name=op.f('uq_campaigns_name'))
    )
    op.create_table('contact_imports',
    sa.Column('id', sa.Integer(), sa.Identity(always=False), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('filename', sa.Text(), nullable=False),
    sa.Column('checksum', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), server_default='running', nullable=False),
    sa.Column('rows_total', sa.Integer(), server_default='0', nullable=False),
    sa.Column('accepted', sa.Integer(), server_default='0', nullable=False),
    sa.Column('rejected', sa.Integer(), server_default='0', nullable=False),
    sa.Column('duplicates', sa.Integer(), server_default='0', nullable=False),
    sa.Column('on_dnc', sa.Integer(), server_default='0', nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.CheckConstraint("status IN ('running', 'completed', 'failed')", name=op.f('ck_contact_imports_status_known')),
    sa.CheckConstraint('rows_total >= 0 AND accepted >= 0 AND rejected >= 0 AND duplicates >= 0 AND on_dnc >= 0', name=op.f('ck_contact_imports_counts_not_negative')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_contact_imports_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contact_imports'))
    )
    op.create_index(op.f('ix_contact_imports_campaign_id'), 'contact_imports', ['campaign_id'], unique=False)
    op.create_table('dnc_numbers',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('phone_e164', sa.Text(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=True),
    sa.Column('source', sa.Text(), server_default='manual', nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('added_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("phone_e164 ~ '^\\+[1-9][0-9]{1,14}$'", name=op.f('ck_dnc_numbers_phone_e164_format')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_dnc_numbers_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_dnc_numbers')),
    sa.UniqueConstraint('phone_e164', 'campaign_id', name=op.f('uq_dnc_numbers_phone_e164_campaign_id'), postgresql_nulls_not_distinct=True)
    )
    op.create_table('contacts',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('import_id', sa.Integer(), nullable=True),
    sa.Column('phone_e164', sa.Text(), nullable=False),
    sa.Column('phone_raw', sa.Text(), nullable=False),
    sa.Column('first_name', sa.Text(), nullable=True),
    sa.Column('last_name', sa.Text(), nullable=True),
    sa.Column('fields', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('timezones', postgresql.ARRAY(sa.Text()), server_default='{}', nullable=False),
    sa.Column('status', sa.Text(), server_default='pending', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default='0', nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_outcome', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("phone_e164 ~ '^\\+[1-9][0-9]{1,14}$'", name=op.f('ck_contacts_phone_e164_format')),
    sa.CheckConstraint("status IN ('pending', 'dialing', 'completed', 'exhausted', 'dnc', 'cancelled')", name=op.f('ck_contacts_status_known')),
    sa.CheckConstraint('attempts >= 0', name=op.f('ck_contacts_attempts_not_negative')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_contacts_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['import_id'], ['contact_imports.id'], name=op.f('fk_contacts_import_id_contact_imports'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contacts')),
    sa.UniqueConstraint('campaign_id', 'phone_e164', name=op.f('uq_contacts_campaign_id_phone_e164'))
    )
    op.create_index('ix_contacts_due', 'contacts', ['campaign_id', 'next_attempt_at'], unique=False, postgresql_where=sa.text("status = 'pending'"))
    op.create_table('import_rejects',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('import_id', sa.Integer(), nullable=False),
    sa.Column('line_number', sa.Integer(), nullable=False),
    sa.Column('raw', sa.Text(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.CheckConstraint('line_number >= 1', name=op.f('ck_import_rejects_line_number_positive')),
    sa.ForeignKeyConstraint(['import_id'], ['contact_imports.id'], name=op.f('fk_import_rejects_import_id_contact_imports'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_import_rejects'))
    )
    op.create_index(op.f('ix_import_rejects_import_id'), 'import_rejects', ['import_id'], unique=False)
    op.create_table('call_attempts',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('custom_call_id', sa.Text(), nullable=False),
    sa.Column('campaign_id', sa.Integer(), nullable=False),
    sa.Column('contact_id', sa.BigInteger(), nullable=False),
    sa.Column('trunk_id', sa.Integer(), nullable=False),
    sa.Column('attempt_number', sa.Integer(), nullable=False),
    sa.Column('status', sa.Text(), server_default='queued', nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('queued_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('send_error', sa.Text(), nullable=True),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('uniqueid', sa.Text(), nullable=True),
    sa.Column('channel', sa.Text(), nullable=True),
    sa.Column('originate_response', sa.Text(), nullable=True),
    sa.Column('originate_reason', sa.Integer(), nullable=True),
    sa.Column('dial_status', sa.Text(), nullable=True),
    sa.Column('amd_status', sa.Text(), nullable=True),
    sa.Column('amd_cause', sa.Text(), nullable=True),
    sa.Column('dtmf', sa.Text(), nullable=True),
    sa.Column('transfer_requested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('transfer_answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('transfer_ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('transfer_status', sa.Text(), nullable=True),
    sa.Column('voicemail_left', sa.Boolean(), nullable=True),
    sa.Column('recording_file', sa.Text(), nullable=True),
    sa.Column('hangup_cause', sa.Integer(), nullable=True),
    sa.Column('hangup_cause_txt', sa.Text(), nullable=True),
    sa.Column('outcome', sa.Text(), nullable=True),
    sa.CheckConstraint("custom_call_id ~ '^[0-9]+_[0-9]+$'", name=op.f('ck_call_attempts_custom_call_id_shape')),
    sa.CheckConstraint("dtmf IS NULL OR dtmf ~ '^[0-9*#]+$'", name=op.f('ck_call_attempts_dtmf_digits')),
    sa.CheckConstraint("status <> 'ended' OR (outcome IS NOT NULL AND ended_at IS NOT NULL)", name=op.f('ck_call_attempts_ended_has_outcome')),
    sa.CheckConstraint("status IN ('queued', 'originating', 'up', 'ended', 'not_sent')", name=op.f('ck_call_attempts_status_known')),
    sa.CheckConstraint('attempt_number >= 1', name=op.f('ck_call_attempts_attempt_number_positive')),
    sa.ForeignKeyConstraint(['campaign_id'], ['campaigns.id'], name=op.f('fk_call_attempts_campaign_id_campaigns'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_call_attempts_contact_id_contacts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['trunk_id'], ['trunks.id'], name=op.f('fk_call_attempts_trunk_id_trunks')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_call_attempts')),
    sa.UniqueConstraint('contact_id', 'attempt_number', name=op.f('uq_call_attempts_contact_id_attempt_number')),
    sa.UniqueConstraint('custom_call_id', name=op.f('uq_call_attempts_custom_call_id'))
    )
    op.create_index('ix_call_attempts_campaign_queued', 'call_attempts', ['campaign_id', 'queued_at'], unique=False)
    op.create_index('ix_call_attempts_open_trunk', 'call_attempts', ['trunk_id', 'status'], unique=False, postgresql_where=sa.text("status IN ('queued', 'originating', 'up')"))
    op.create_table('call_events',
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('call_attempt_id', sa.BigInteger(), nullable=False),
    sa.Column('event', sa.Text(), nullable=False),
    sa.Column('fingerprint', sa.Text(), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.ForeignKeyConstraint(['call_attempt_id'], ['call_attempts.id'], name=op.f('fk_call_events_call_attempt_id_call_attempts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_call_events')),
    sa.UniqueConstraint('call_attempt_id', 'fingerprint', name=op.f('uq_call_events_call_attempt_id_fingerprint'))
    )


def downgrade() -> None:
    op.drop_table('call_events')
    op.drop_index('ix_call_attempts_open_trunk', table_name='call_attempts', postgresql_where=sa.text("status IN ('queued', 'originating', 'up')"))
    op.drop_index('ix_call_attempts_campaign_queued', table_name='call_attempts')
    op.drop_table('call_attempts')
    op.drop_index(op.f('ix_import_rejects_import_id'), table_name='import_rejects')
    op.drop_table('import_rejects')
    op.drop_index('ix_contacts_due', table_name='contacts', postgresql_where=sa.text("status = 'pending'"))
    op.drop_table('contacts')
    op.drop_table('dnc_numbers')
    op.drop_index(op.f('ix_contact_imports_campaign_id'), table_name='contact_imports')
    op.drop_table('contact_imports')
    op.drop_table('campaigns')
    op.drop_table('trunks')
