"Papermill-parameterised pipeline notebooks shipped with wrpo (not exported by nbdev)."
