"""alert rules and the notification outbox

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from norc.store.schema import BigId, Name, UTCDateTime

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'norc_alert_rules',
        sa.Column('id', BigId, primary_key=True, autoincrement=True),
        sa.Column('name', Name, nullable=False),
        sa.Column('events', sa.JSON(), nullable=False),
        sa.Column('task_glob', Name, nullable=True),
        sa.Column('schedule_id', BigId, nullable=True),
        sa.Column('channel', Name, nullable=False),
        sa.Column('target', sa.String(1000), nullable=False),
        sa.Column('options', sa.JSON(), nullable=False),
        sa.Column('enabled', sa.Boolean(), nullable=False),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id', name='pk_norc_alert_rules'),
        sa.UniqueConstraint('name', name='uq_norc_alert_rules_name'),
        sqlite_autoincrement=True,
    )
    op.create_table(
        'norc_notifications',
        sa.Column('id', BigId, primary_key=True, autoincrement=True),
        sa.Column('rule_id', BigId, nullable=False),
        sa.Column('event', sa.String(16), nullable=False),
        sa.Column('subject', sa.String(255), nullable=False),
        sa.Column('instance_id', BigId, nullable=True),
        sa.Column('daemon_id', BigId, nullable=True),
        sa.Column('schedule_id', BigId, nullable=True),
        sa.Column('payload', sa.JSON(), nullable=False),
        sa.Column('status', sa.String(16), nullable=False),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('next_attempt_at', UTCDateTime(), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('created_at', UTCDateTime(), nullable=False),
        sa.Column('sent_at', UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint('id', name='pk_norc_notifications'),
        sa.UniqueConstraint(
            'rule_id', 'event', 'subject', name='uq_norc_notifications_rule_id_event_subject'
        ),
        sqlite_autoincrement=True,
    )
    op.create_index(
        'ix_norc_notifications_status_next_attempt_at',
        'norc_notifications',
        ['status', 'next_attempt_at'],
    )
    op.create_index(
        'ix_norc_notifications_rule_id_status_sent_at',
        'norc_notifications',
        ['rule_id', 'status', 'sent_at'],
    )


def downgrade() -> None:
    op.drop_table('norc_notifications')
    op.drop_table('norc_alert_rules')
