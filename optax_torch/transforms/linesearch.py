"""Line searches: backtracking (Armijo) and zoom (strong Wolfe), value_and_grad_from_state."""

from __future__ import annotations

__all__: list[str] = []
