"""The chain follower: sources, block pipeline, handlers, metadata resolution."""
