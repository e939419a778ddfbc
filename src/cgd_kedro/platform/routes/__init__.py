"""The platform's pages, one ``APIRouter`` per group: experiments (and their figures), the
leaderboard (and grid reports), runs and jobs, model submissions."""
