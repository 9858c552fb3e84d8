//! One module per kernel hook, named after it. Each program is a thin wrapper that hands
//! its arguments to shared code; errors end the program quietly.

mod conn_request;
mod kfree_skb;
mod retransmit_synack;
mod syn_recv_sock;
