"""State: the SQL schema, its migrations, and the queries every component shares."""
