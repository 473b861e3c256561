"""What every long command of both packages runs on: the stop protocol (``stopping``), loader workers that outlive
a stop signal (``workers``), seeds and generator states (``seeding``), and the process group's store under
torchrun (``rendezvous``)."""
