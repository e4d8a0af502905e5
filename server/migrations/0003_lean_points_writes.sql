-- The workers' write is one statement that checks each point's competition and
-- participant itself (a join in the same statement, so in the same snapshot as
-- the insert) and inserts only the points that pass; participants are never
-- deleted.  The foreign key repeated that check row by row through a trigger:
-- measured with pg_stat_statements on this schema, it was ~30% of PostgreSQL's
-- CPU per inserted point.  The committed_at index served only a "committed in
-- the last 10 s" count, which now comes from Redis counters (another ~10%).
ALTER TABLE points DROP CONSTRAINT IF EXISTS points_participant_id_competition_id_fkey;
DROP INDEX IF EXISTS points_committed_at;
