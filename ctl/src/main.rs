//! upkeepctl (being written).
fn main() {}
