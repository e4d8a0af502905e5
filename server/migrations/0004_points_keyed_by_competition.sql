-- Point ids are scoped per competition: two competitions may use the same client
-- id ("judge-7") for two points.  The key becomes (competition_id, id); the
-- workers' insert is idempotent on it (ON CONFLICT (competition_id, id) DO
-- NOTHING), and a point whose key is taken by one of other content is refused
-- as an id conflict, never counted as a duplicate.  Existing rows migrate as
-- they are: ids were unique on their own, so they are unique per competition.
-- The new key also serves GET /v1/competitions/{id}/points/{point_id}.
ALTER TABLE points DROP CONSTRAINT points_pkey;
ALTER TABLE points ADD CONSTRAINT points_pkey PRIMARY KEY (competition_id, id);
