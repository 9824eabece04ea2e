"""From policy to release: what decides whether an exported policy may go to the robot."""
