//! upkeep-workers (being written).
