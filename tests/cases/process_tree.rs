//! Process trees: what happens to a backend's descendants.

