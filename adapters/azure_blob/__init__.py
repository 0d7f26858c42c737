"""Azure Blob storage, shared by the ``azure`` and ``azure-mcs`` connectors: a fixed VHD into
a managed disk's page blob through its write SAS (:mod:`adapters.azure_blob.pages`), only the
non-zero pages (:mod:`adapters.azure_blob.nonzero`), Azure Storage errors as adapter errors
(:mod:`adapters.azure_blob.storage_errors`).

Not a connector type itself (no ``Config``/``Adapter``): the registry does not list it.
"""
