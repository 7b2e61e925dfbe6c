from manager_service.cli import main

main()
