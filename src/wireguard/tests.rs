//! Parser and spec tests for wg-quick files.
