//! agentcpt-datasets: the sample schema, Parquet streaming, tokenization, packing, mixtures
//! and synthesis. It has no burn dependency, so it builds and tests fast.
