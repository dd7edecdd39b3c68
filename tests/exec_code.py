"""`python -m tests.exec_code CODE`: runs CODE; a stand-in command for step-runner tests."""
import sys

if __name__ == "__main__":
  exec(sys.argv[1])  # pylint: disable=exec-used
