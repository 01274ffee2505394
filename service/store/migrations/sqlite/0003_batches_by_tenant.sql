-- The console and GET /v1/batches list a tenant's batches newest first.

CREATE INDEX batches_tenant_created ON batches (tenant, created_at, id);
