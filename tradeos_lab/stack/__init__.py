"""The running stack: embedded servers, the runtime file other processes find it by, clients."""
