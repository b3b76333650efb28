"""Small query functions over the projections (PostgreSQL) and the streams (Redis), each
returning JSON-ready data; the route handlers around them only parse and answer."""
