-- Operators of the admin API and console, their sessions, and the audit log
-- (docs/ADMIN_API.md). Operators are apart from players: no table refers to users.
CREATE TABLE IF NOT EXISTS operators (
    id            bigserial PRIMARY KEY,
    name          text        NOT NULL,
    -- argon2id, PHC string.
    password_hash text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('viewer', 'moderator', 'admin')),
    disabled      boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now()
);

-- Names are unique regardless of case.
CREATE UNIQUE INDEX IF NOT EXISTS operators_name_lower_key ON operators (lower(name));

-- A session is the SHA-256 of the random token in the operator's cookie; it ends
-- after ADMIN_SESSION_SECS without a request (last_seen), or when its operator is
-- disabled (deleted then, and never honoured for a disabled operator).
CREATE TABLE IF NOT EXISTS operator_sessions (
    token_hash  bytea       PRIMARY KEY,
    operator_id bigint      NOT NULL REFERENCES operators (id) ON DELETE CASCADE,
    csrf        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    last_seen   timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS operator_sessions_operator_idx ON operator_sessions (operator_id);
CREATE INDEX IF NOT EXISTS operator_sessions_last_seen_idx ON operator_sessions (last_seen);

-- Every state-changing request of an operator (allowed, refused or failed) and every
-- operator login attempt. Append-only: the trigger below refuses UPDATE and DELETE.
CREATE TABLE IF NOT EXISTS audit_log (
    id       bigserial   PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    -- The operator's name, or `cli:<os user>` for the command line.
    operator text        NOT NULL,
    action   text        NOT NULL,
    target   text,
    reason   text,
    outcome  text        NOT NULL CHECK (outcome IN ('ok', 'refused', 'failed')),
    address  text,
    detail   jsonb
);

CREATE INDEX IF NOT EXISTS audit_log_target_idx ON audit_log (lower(target), id);
CREATE INDEX IF NOT EXISTS audit_log_operator_idx ON audit_log (lower(operator), id);

CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit_log is append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;

DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log;
CREATE TRIGGER audit_log_append_only
    BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();

DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log;
CREATE TRIGGER audit_log_no_truncate
    BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
