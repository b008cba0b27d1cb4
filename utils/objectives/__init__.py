"""What each step adds to the loop: its loss per batch and its evaluation."""
