"""PostgreSQL: the pool, the migrations, and every SQL statement the service runs."""
