-- Competitions, participants, committed points, running standings, API tokens.

CREATE TABLE competitions (
    id          bigserial PRIMARY KEY,
    slug        text NOT NULL UNIQUE,
    name        text NOT NULL,
    starts_at   timestamptz,
    ends_at     timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE participants (
    id              bigserial PRIMARY KEY,
    competition_id  bigint NOT NULL REFERENCES competitions (id),
    external_ref    text NOT NULL,
    display_name    text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (competition_id, external_ref),
    -- target of the points' composite foreign key: a point's participant must
    -- belong to the point's competition.
    UNIQUE (id, competition_id)
);

-- One row per accepted point, written once (ON CONFLICT (id) DO NOTHING).
CREATE TABLE points (
    id              text PRIMARY KEY,
    competition_id  bigint NOT NULL,
    participant_id  bigint NOT NULL,
    value           double precision NOT NULL,
    recorded_at     timestamptz NOT NULL,
    received_at     timestamptz NOT NULL,
    committed_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    FOREIGN KEY (participant_id, competition_id) REFERENCES participants (id, competition_id)
);
-- stats (count, last point, points per minute) scan one competition by time.
CREATE INDEX points_competition_recorded ON points (competition_id, recorded_at);
-- the harness measures accepted -> committed lag over recent commits.
CREATE INDEX points_committed_at ON points (committed_at);

-- Maintained in the same transaction as the points insert, from the rows actually
-- inserted, so a redelivered point is never counted twice.
CREATE TABLE standings (
    competition_id  bigint NOT NULL REFERENCES competitions (id),
    participant_id  bigint NOT NULL REFERENCES participants (id),
    total           double precision NOT NULL DEFAULT 0,
    points          bigint NOT NULL DEFAULT 0,
    last_point_at   timestamptz,
    PRIMARY KEY (competition_id, participant_id)
);
-- the leaderboard: one competition, highest total first.
CREATE INDEX standings_leaderboard ON standings (competition_id, total DESC, participant_id);

CREATE TABLE api_tokens (
    id          bigserial PRIMARY KEY,
    token_hash  bytea NOT NULL UNIQUE,
    role        text NOT NULL CHECK (role IN ('read', 'ingest', 'admin')),
    name        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
