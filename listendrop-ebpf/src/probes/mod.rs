//! One module per kernel hook, named after it.

mod kfree_skb;
