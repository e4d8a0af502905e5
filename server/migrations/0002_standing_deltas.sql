-- Standings change through an append-only log folded in the background, so that
-- concurrent workers never wait on each other's standings row locks (profiled:
-- with 4 workers upserting the same standings rows, commits serialised and
-- throughput fell below that of 2 workers).  A batch's deltas are written in
-- the same transaction as its points, so exactly-once still holds; the folder
-- moves them into standings in transactions of its own.
CREATE TABLE standing_deltas (
    id              bigserial PRIMARY KEY,
    competition_id  bigint NOT NULL,
    participant_id  bigint NOT NULL,
    total           double precision NOT NULL,
    points          bigint NOT NULL,
    last_point_at   timestamptz NOT NULL
);
