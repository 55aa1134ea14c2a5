"""Moving data: files (Range/ETag), uploads, CSV/NDJSON exports, the upstream proxy, compression."""
