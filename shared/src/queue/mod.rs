//! Redis queue backend (being written).
