"""miniecs controller: the region's desired state, the REST API and the spec compiler."""
