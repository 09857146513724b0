"""The actors: one supervisor per job, one team actor per provider, one broadcaster."""
