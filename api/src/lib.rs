//! upkeep-api (being written).
