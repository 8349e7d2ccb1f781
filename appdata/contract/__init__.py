"""The event contract, kept in one place so every path agrees on it.

- `schema`: the fields, their limits (including the ones the sinks impose), the one validation
  engine, JSON parsing of untrusted input and the duplicate rule;
- `layout`: every S3 key of the bucket;
- `deadletters`: the one shape of a rejected record, its writer and its reader;
- `days`: the one form of a day in a filter (YYYY-MM-DD, nothing else).

Pure library: no Dagster, no clients of its own.
"""
