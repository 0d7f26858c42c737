"""Google Cloud target (issue 11): the Compute Engine adapter lives here; :mod:`adapters.gcp.storage`
uploads the gce-tar artifact to Cloud Storage."""
