//! upkeep-scheduler (being written).
