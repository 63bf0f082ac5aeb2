-- Bans, mutes and kicks waiting for their player (MODERATION.md). A row is never
-- deleted: lifting one records who lifted it, when and why, so the history of an
-- account stays whole. At most one active ban and one active mute per account: a new
-- one lifts the one before.
CREATE TABLE IF NOT EXISTS sanctions (
    id          bigserial   PRIMARY KEY,
    user_id     bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    kind        text        NOT NULL CHECK (kind IN ('ban', 'mute', 'kick')),
    reason      text        NOT NULL,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- NULL: permanent (a ban), or until delivered (a kick).
    until       timestamptz,
    lifted_at   timestamptz,
    lifted_by   text,
    lift_reason text
);

-- The active ones of an account: what every login and uncached token_auth reads.
CREATE INDEX IF NOT EXISTS sanctions_open_idx ON sanctions (user_id, kind) WHERE lifted_at IS NULL;
