//! Local locks keep their wait-for edges in the lock directory (to come).
