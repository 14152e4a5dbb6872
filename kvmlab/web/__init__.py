"""`kvmlab web`: one page per lab with the serial and graphical console of each node."""
