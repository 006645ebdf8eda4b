"""Wire types of the REST API: per resource a create, an update (where useful), a read view
and a list with a page token."""
