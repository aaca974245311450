"""The registry's PostgreSQL store: SQL and transactions, domain errors out."""
