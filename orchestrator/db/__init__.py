"""Storage: the tables, the database connection and the migrations that create them."""
