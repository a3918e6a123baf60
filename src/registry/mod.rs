//! The registry: one generic store that does the verbs, keys, preconditions and watch once, and a
//! Strategy per resource (defaults, validation, status rules, selectable fields, table columns).

pub mod bootstrap;
pub mod merge;
