"""The ground every process stands on, knowing nothing of the chain or the domain: settings,
logging, HTTP serving, rate limits, listening ports, outbound network guards, progress lines."""
