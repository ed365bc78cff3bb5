"""A local, faithful stand-in for the cluster and Mission Control; never imported by the library itself."""
